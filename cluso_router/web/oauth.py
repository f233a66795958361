"""
C{/api/oauth/*}: not implemented, on purpose.

The original server signs users in with another product's OAuth client
(its client id hard-coded) and keeps the tokens on disk. This server talks
to model providers with API keys only, so every path below C{/api/oauth}
answers 501 with the JSON envelope saying how to configure one, instead
of a bare 404 that looks like a broken install.
"""

from __future__ import annotations

from typing import Final

from twisted.web.resource import Resource
from twisted.web.server import Request

from cluso_router.web.resources import envelope, write_envelope

OAUTH_UNSUPPORTED: Final = (
    "OAuth sign-in is not supported; configure an API key with --ai-anthropic-key"
)


class OAuthUnsupported(Resource):
    """
    501 with the envelope, for any method and any path below it.
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        return write_envelope(request, 501, envelope(error=OAUTH_UNSUPPORTED))
