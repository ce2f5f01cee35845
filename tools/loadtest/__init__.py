"""`make loadtest`: serve the shipped service, run locustfile.py headless, write the reports."""
