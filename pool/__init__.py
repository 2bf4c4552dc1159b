"""The token pool: pairs, reservations, lookup and detokenize answered from PostgreSQL."""
