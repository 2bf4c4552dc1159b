"""Models of this domain; imported by core/models.py so Django sees them under app label "core"."""
