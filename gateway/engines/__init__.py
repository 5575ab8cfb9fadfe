"""Student engines behind one protocol (base.py): embedded transformers, vLLM, remote."""
