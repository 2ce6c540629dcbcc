"""The BentoML service that recommends, explains and takes live events."""
