"""One module per report page: the plain data each page's template words."""
