"""Puts `experiments/fair_run.py report`'s tables into docs/results.md between their markers."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
import fair_run  # noqa: E402

path = os.path.join(ROOT, "docs", "results.md")
text = open(path, encoding="utf-8").read()
tables = [("lengths", fair_run.lengths_table()), ("select", fair_run.selection_table())]
tables += [(f"final-{eps}", fair_run.final_table(eps)) for eps in fair_run.EPS]
for key, table in tables:
    text = re.sub(rf"<!-- fair_run:{key} -->.*?<!-- /fair_run:{key} -->",
                  lambda _: f"<!-- fair_run:{key} -->\n{table}\n<!-- /fair_run:{key} -->", text, flags=re.S)
open(path, "w", encoding="utf-8").write(text)
