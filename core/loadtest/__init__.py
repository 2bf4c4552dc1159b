"""The plan's load test (contract section 6): open-loop card arrivals against the pool approach
(TokenPoolClient) and the library approach (HttpTokenizationLibrary), TOME calls counted by TOME.

Django-free: ``manage.py loadtest`` only gathers defaults from settings and calls ``run_loadtest``.
"""
