"""Slows the train step by DECAYREC_TEST_SLOW_TRAIN_S seconds in every process started with
this folder on PYTHONPATH (the schedule's runner and the flow runs it starts), so that a
run outlasts its schedule's interval. Test code only: nothing in the project imports it."""
import os
import time

SECONDS = float(os.environ.get("DECAYREC_TEST_SLOW_TRAIN_S", "0") or 0)

if SECONDS:
    import flows.steps as steps

    _train_step = steps.train_step

    def train_step(params, protocols=None):
        time.sleep(SECONDS)
        return _train_step(params, protocols)

    train_step.__doc__ = _train_step.__doc__
    steps.train_step = train_step
