"""Building a student offline: the labelled data format, tokenizer, model, trainer."""
