"""The data half of the pipeline: download or render, validate, preprocess, load.

download.py -> data/raw/<name>, validate.py -> data/manifest.csv + metrics/data.json,
preprocess.py -> data/processed, dataset.py reads data/processed for the trainers.
"""
