<?php
// The document root of examples/php-fpm.toml: php-fpm runs this for "/" (index = "index.php").
header('Content-Type: text/plain');
echo "hello from PHP ", PHP_VERSION, " (SCRIPT_NAME=", $_SERVER['SCRIPT_NAME'], ")\n";
