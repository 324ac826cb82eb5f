"""The container image every component runs in on Vertex AI (see Dockerfile).

``compile.py --image`` replaces it everywhere in the compiled YAML (executors, the train step's
worker pools, parameter defaults such as the Dataflow worker image); ``kfp.local`` ignores it.
With ``--accelerator-type`` the train step's replicas run the GPU image instead (``Dockerfile.gpu``;
``compile.py --gpu-image``, default ``pipelines.compilation.gpu_image_for(image)``: the tag with
``-gpu`` appended). ``submit.py`` warns when a pipeline still runs this placeholder.
"""

PROJECT_IMAGE = "us-docker.pkg.dev/your-project/vertex_imbalanced/trainer:0.1.0"
