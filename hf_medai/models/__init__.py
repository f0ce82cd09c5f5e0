"""Model builders: hub id | local folder | tiny config -> model (+ processor / tokenizer)."""
