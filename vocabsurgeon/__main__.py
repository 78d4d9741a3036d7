"""``python -m vocabsurgeon``: the console command (see entry)."""

if __name__ == "__main__":  # not when a spawned worker process imports this module as __mp_main__
    from vocabsurgeon.entry import run

    run(prog_name=None)  # click names it `python -m vocabsurgeon`
