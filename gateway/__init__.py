"""distillgate: an OpenAI-compatible gateway where a calibrated student answers and a teacher
takes the rest. The folders follow a request: api/ (the HTTP edge), pipeline/ (the data
path), engines/, teachers/, capture/; around them the app, its settings, the CLI."""
