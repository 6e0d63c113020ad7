"""The REST/JSON gateway in front of tfmesh's gRPC services (FastAPI on uvicorn)."""
