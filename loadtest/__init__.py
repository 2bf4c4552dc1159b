"""The plan's load test (contract section 6): open-loop card arrivals against the pool approach
(TokenPoolClient) and the library approach (HttpTokenizationLibrary), TOME calls counted by TOME.

The engine and the runner import no Django (the HTML report borrows the dashboard's axis helper);
``manage.py loadtest`` only gathers defaults from settings and calls ``run_loadtest``.
"""
