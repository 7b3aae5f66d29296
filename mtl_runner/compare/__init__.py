"""``mtl-compare``: summarise runs and sweeps (mean ± std per group, Δm%, mean rank, plots).

The modules, in the order data flows through them: :mod:`.runs` finds and reads run
directories, :mod:`.summary` groups them and computes the table, Δm% and ranks, :mod:`.plots`
draws the curves, :mod:`.report` ties these together for :mod:`.cli` and :mod:`.callback`.
Nothing here imports torch; this file imports nothing, so the Hydra callback stays cheap to load.
"""
