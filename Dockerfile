# One image for Dataflow: the Flex Template launcher and the custom SDK
# (worker) container, with TensorFlow and this package installed.
#   IMAGE=REGION-docker.pkg.dev/PROJECT/stylize/stylize:0.1.0
#   docker build --build-arg STYLIZE_IMAGE=$IMAGE -t $IMAGE .
# (or: gcloud builds submit --config deploy/cloudbuild.yaml
#        --substitutions _IMAGE=$IMAGE)
# Any Beam release in pyproject.toml's range; the SDK image and the installed
# apache-beam are the same release (the workers' Beam must match the
# launcher's).
ARG BEAM_VERSION=2.78.0
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:latest AS launcher
FROM apache/beam_python3.11_sdk:${BEAM_VERSION}

COPY --from=launcher /opt/google/dataflow/python_template_launcher \
     /opt/google/dataflow/python_template_launcher

ARG BEAM_VERSION
WORKDIR /template
# pyproject.toml declares the package; setup.py is the shim Flex Templates
# and --setup_file name.
COPY pyproject.toml setup.py README.md ./
COPY beam_jobs beam_jobs
# transforms/ carries the embedded magenta-lite model (package data).
COPY transforms transforms
# stylize-train's feature-extraction DoFns run on the same workers.
COPY training training
COPY configs configs
RUN pip install --no-cache-dir . "apache-beam[gcp]==${BEAM_VERSION}" \
 && python -c "import tensorflow, tensorflow_hub, tf_keras, ai_edge_litert, openvino, beam_jobs.stylize, beam_jobs.train" \
 && python -c "from transforms.models import embedded; embedded.resolve('magenta-lite')"

# The builtin model is exported at build time so workers need not.
ENV STYLIZE_CACHE_DIR=/opt/stylize-cache
RUN python -c "from transforms.models.builtin import ensure_builtin; ensure_builtin()"

ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/beam_jobs/stylize.py
ENV FLEX_TEMPLATE_PYTHON_SETUP_FILE=/template/setup.py
# Everything is installed in the image: the launcher must not pip install.
ENV PIP_NO_DEPS=True

# The image names itself, so a launch from it starts workers from it too
# (stylize sets --sdk_container_image from this when none is given).
ARG STYLIZE_IMAGE=""
ENV STYLIZE_SDK_CONTAINER_IMAGE=${STYLIZE_IMAGE}

ENTRYPOINT ["/opt/apache/beam/boot"]
