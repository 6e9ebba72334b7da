"""The package's layout: training and analysis are two wings over one shared floor.

Shared floor: prompts, descriptions, evaluation, generation, collate, sequence_layout, architecture,
data, phi3v. Training wing: training, pretraining, tiny_base_model. Analysis wing: predictions,
plots, data.plots, demo, results. Importing the analysis wing must not load the training wing.
"""

import json
import subprocess
import sys

TRAINING_WING = ["phi3v_tutorial.training", "phi3v_tutorial.pretraining", "phi3v_tutorial.tiny_base_model"]
ANALYSIS_WING = ["phi3v_tutorial.evaluation", "phi3v_tutorial.descriptions", "phi3v_tutorial.predictions",
                 "phi3v_tutorial.data.plots", "phi3v_tutorial.plots", "phi3v_tutorial.demo", "phi3v_tutorial.results"]

# In a fresh interpreter: import the analysis modules one by one, noting the training modules loaded after each.
PROBE = f"""
import importlib, json, sys
loaded = {{}}
for module in {ANALYSIS_WING!r}:
    importlib.import_module(module)
    loaded[module] = [name for name in {TRAINING_WING!r} if name in sys.modules]
print(json.dumps(loaded))
"""


def test_the_analysis_wing_loads_nothing_of_the_training_wing():
    loaded = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                       check=True).stdout)
    assert loaded == {module: [] for module in ANALYSIS_WING}
