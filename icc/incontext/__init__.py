"""In-context clustering (ICC): episodes, prompts and answer parsing for a language model."""
