"""The kfp pipeline (training.py, kfp_tasks.py), its steps as plain functions (one module per job, step_*.py,
named by step_table.py; run_spec.py), local runs, dvc parameters, cluster submission (submission.py) and
schedules (schedules.py). No command line here: `abstractinator pipeline ...` (abstractinator/commands/pipeline/)
calls these."""
