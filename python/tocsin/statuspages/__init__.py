"""Status pages: what the public sees of an organisation's checks (see
docs/status-pages.md). `model` (components, the status rule), `directory` (a page by
slug), `public` (building the documents), `render` and `templates/` (the HTML page),
`feed` (Atom), `cache` (the public cache) and `invalidation` (what drops its entries)."""
