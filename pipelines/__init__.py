"""The kfp pipeline (training.py, kfp_tasks.py), its steps as plain functions (steps.py), local runs, dvc
parameters, cluster submission (submission.py) and schedules (schedules.py). No command line here:
`abstractinator pipeline ...` (abstractinator/commands/pipeline/) calls these."""
