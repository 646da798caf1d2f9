"""`deblur batch`: a folder tree of photos through the registry's model on Apache Spark.

One module per job: ``session`` (the SparkSession and every setting the job depends on),
``model`` (the spec resolved once, on the driver, to one MLflow model), ``plan`` (inputs,
outputs, what is already done), ``write`` (the executors' side: results to PNG files,
atomically), ``manifest`` (the row per input and the summary), ``job`` (the run itself),
``cluster`` (a standalone master and worker on 127.0.0.1, for trying it and for the tests).
"""
