"""How a study decides: which configuration to try next (``samplers``), whom to stop and
when (``pruners``: the rules shared by every pruner, and Shared Hyperband), what it
optimises (``objectives``), and opening a study with all three (``study``)."""
