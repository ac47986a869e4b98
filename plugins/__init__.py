"""kansoku's built-in plugins (installed as ``kansoku_plugins``); each subpackage is one plugin."""
