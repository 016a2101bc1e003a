"""Run the phenotype service: python -m services.phenotype [--config FILE] [--port N] [--port-file PATH]."""

import sys

from services.runtime.entrypoint import service_main

if __name__ == "__main__":
    sys.exit(service_main("phenotype"))
