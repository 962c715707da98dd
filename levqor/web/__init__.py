"""Pages, security headers, sitemap and social posting."""
