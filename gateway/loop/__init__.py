"""The improvement loop: capture → train → calibrate → gate → promote → watch → roll back.

``worker.LoopWorker`` runs it per task (``distillgate loop``, or beside ``serve`` for the
single-process demo); ``round.run_round`` is one round; ``registry.Registry`` keeps the
versions and the pointer every gateway follows (``watcher.RegistryWatcher``).
"""
