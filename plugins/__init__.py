"""
Built-in event sources, each a Twisted plugin.

Third-party packages may ship their own source modules into this package;
extending C{__path__} lets C{twisted.plugin.getPlugins} find them wherever
they are installed.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []
