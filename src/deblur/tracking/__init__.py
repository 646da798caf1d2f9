"""Everything that talks to MLflow, one job per module (nothing imported here, so a stage
depends on the modules it uses and no more):

- ``store``: where runs land (the tracking store's URI, also from `dvc exp run
  --temp/--queue`), the experiment, MLflow's warnings muted, the client;
- ``runs``: a stage's run, grouped under one pipeline run per `dvc repro` / `dvc exp run`,
  and what it logs (params, per-epoch metrics, artifacts);
- ``registry``: registered versions, their tags and aliases, the champion, and the local
  cache of registry checkpoints (deblur.promote decides who gets an alias);
- ``flavour``: a checkpoint logged and registered as the pyfunc model (its signature and
  input example), so it accepts any image size;
- ``stages``: the evaluate and report stages' logging;
- ``access``: a refused login (401/403 from the basic-auth app) -> one line naming the user,
  what it may not do and the fix;
- ``runlog``: a training run's metrics in batches, kept through a server outage (bounded
  by a patience), and runs a SIGKILL left RUNNING closed.

Nothing else in the package imports mlflow (but pyfunc.py, the logged model itself), so
the rules of docs/architecture.md's MLflow part live here once.
"""
