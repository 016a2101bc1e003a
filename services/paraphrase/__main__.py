"""Run the paraphrase service: python -m services.paraphrase [--config FILE] [--port N] [--port-file PATH]."""

import sys

from services.runtime.entrypoint import service_main

if __name__ == "__main__":
    sys.exit(service_main("paraphrase"))
