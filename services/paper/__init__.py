"""The paper venue as its own process: a simulated exchange the OMS processes reach over HTTP."""
