"""Pool room: reservations, lifecycle, lookup/detokenize, the HTTP contract of section 2."""
