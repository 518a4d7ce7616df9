"""snapbot's front ends: the command grammar, the wording, the console (and Slack next)."""
