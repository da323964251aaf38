"""Readers of the user's files, one module per kind (images, audio, tables, text): they live with the data, so that
DataModules and ``read_input`` (``polydiff sample --input``) share them and no domain reads files itself."""
