"""HTTP plumbing shared by every endpoint: auth, errors, correlation ids, throttling."""
