"""
The C{ai} source: C{/api/ai/*} and streamed answers on the C{ai-response}
channel.
"""

from cluso_router.sources import SourcePlugin

ai = SourcePlugin(
    name="ai",
    description="AI chat (Gemini, Anthropic, OpenAI-compatible) over HTTP and ai-response.",
    service="cluso_router.sources.ai.make_source",
    options=[
        ["ai-google-key", None, None, "Gemini API key (default: $GOOGLE_API_KEY)."],
        ["ai-anthropic-key", None, None, "Anthropic API key (default: $ANTHROPIC_API_KEY)."],
        ["ai-openai-key", None, None, "OpenAI API key (default: $OPENAI_API_KEY)."],
        [
            "ai-openai-url",
            None,
            None,
            "Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1 "
            "(default: $OPENAI_BASE_URL, else OpenAI's).",
        ],
        ["ai-google-url", None, None, "Base URL of the Gemini API (default: Google's)."],
        ["ai-anthropic-url", None, None, "Base URL of the Anthropic API (default: Anthropic's)."],
        [
            "ai-max-streams",
            None,
            16,
            "Answers streamed at once (each holds an upstream connection); more are refused.",
            int,
        ],
        [
            "ai-idle-timeout",
            None,
            60.0,
            "Seconds an upstream answer may send nothing before it is abandoned.",
            float,
        ],
    ],
)
