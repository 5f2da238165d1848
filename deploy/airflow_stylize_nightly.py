"""Airflow DAG: stylize what arrived in the bucket, every night at 02:00.

Launches the Flex Template built from this repository (README, "Run on
Dataflow"). The job is incremental by default: photos already stylized with
the same style, model and settings are recorded as `skipped` and not redone,
so a nightly run only pays for the new ones, and a run that died is simply
completed by the next. Needs apache-airflow-providers-google.
"""

import pendulum
from airflow import DAG
from airflow.providers.google.cloud.operators.dataflow import (
    DataflowStartFlexTemplateOperator)

PROJECT = 'PROJECT'
REGION = 'REGION'
BUCKET = 'BUCKET'
IMAGE = f'{REGION}-docker.pkg.dev/{PROJECT}/stylize/stylize:0.1.0'

with DAG(
    dag_id='stylize_nightly',
    schedule='0 2 * * *',
    start_date=pendulum.datetime(2026, 1, 1, tz='UTC'),
    catchup=False,
    max_active_runs=1,  # Never two runs on one output folder at once.
) as dag:
  DataflowStartFlexTemplateOperator(
      task_id='stylize',
      project_id=PROJECT,
      location=REGION,
      wait_until_finished=True,
      body={
          'launchParameter': {
              'jobName': 'stylize-nightly-{{ ds_nodash }}',
              'containerSpecGcsPath':
                  f'gs://{BUCKET}/templates/stylize.json',
              'parameters': {
                  'input': f'gs://{BUCKET}/photos',
                  'style': f'gs://{BUCKET}/styles/starry_night.jpg',
                  'model': f'gs://{BUCKET}/models/magenta-arbitrary-v1-256',
                  'output': f'gs://{BUCKET}/stylized',
                  'max_failure_ratio': '0.05',
              },
              'environment': {
                  'machineType': 'n2-standard-8',
                  'maxWorkers': 20,
                  'tempLocation': f'gs://{BUCKET}/tmp',
                  # Workers start from the same image (TensorFlow inside).
                  'sdkContainerImage': IMAGE,
              },
          }
      },
  )
