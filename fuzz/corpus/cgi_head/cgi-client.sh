Location: https://example.com/x
Status: 301 Moved

moved
