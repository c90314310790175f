"""Tasks of the equivalence studies (one big-batch step vs averaged single-example steps)."""
