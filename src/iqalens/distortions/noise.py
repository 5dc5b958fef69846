"""Placeholder: types of this group are registered here."""
