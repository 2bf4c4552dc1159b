"""The migration history of the single-app layout (app label ``core``, migrations 0001-0014).

Every table was created here; migration 0014 hands the models over to their domain apps (keys, pool,
refill, onboarding, monitoring) without touching a table, so existing databases migrate in place.
No code lives here any more: keep the app installed so that history stays applicable."""
