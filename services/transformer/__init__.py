"""Transformer: validates each raw page, masks sensitive fields, adds department codes, hands the page to the saver."""
