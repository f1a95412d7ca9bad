"""Where work runs: the ``--device`` choice and ``--shard K/N`` splits over processes."""
