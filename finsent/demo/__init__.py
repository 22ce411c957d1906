"""Demo assets: default alert rules and a replay stream with an injected negative surge."""
