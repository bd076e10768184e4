"""The bundled demo: a tiny HTTP app and a load generator."""
