"""Fuzz targets for every parser the proxy exposes to clients and servers, and their runner (`make fuzz`)."""
