<?php
/*
 * mailshim-prepend.php — tell mailshim's sendmail which PHP script sends mail.
 *
 * mailshim records, for every message, the UID that sent it (from the
 * kernel) and, as advisory information, the script. Under CGI and mod_php
 * the web server puts SCRIPT_FILENAME in the environment that mail() passes
 * on to /usr/sbin/sendmail; under PHP-FPM it does not (FastCGI parameters
 * are not environment variables), so sendmail cannot see which of a
 * pool's scripts called mail(). This snippet closes that gap: it exports
 * the script path as MAILSHIM_SCRIPT, which sendmail reads and records
 * with script-source=MAILSHIM_SCRIPT.
 *
 * Install it for a pool (or globally) with:
 *
 *     ; /etc/php/8.2/fpm/pool.d/www.conf
 *     php_admin_value[auto_prepend_file] = /usr/share/mailshim/php/mailshim-prepend.php
 *
 * or in php.ini:
 *
 *     auto_prepend_file = /usr/share/mailshim/php/mailshim-prepend.php
 *
 * If a pool already has an auto_prepend_file, include this file from it.
 *
 * It produces no output, defines nothing, and costs one putenv() per
 * request. PHP restores the environment at the end of each request, so a
 * value never leaks from one request to the next in a long-lived FPM
 * worker. Like PHP's own X-PHP-Originating-Script header, the value is a
 * claim made by code running as the site's user: mailshim labels it
 * advisory and never uses it for an access decision.
 */
(static function (): void {
    $script = $_SERVER['SCRIPT_FILENAME'] ?? null;
    if (!is_string($script) || $script === '') {
        putenv('MAILSHIM_SCRIPT');
        return;
    }
    // One line, bounded: sendmail escapes control bytes anyway.
    $script = substr(preg_replace('/[\x00-\x1f\x7f]/', '?', $script), 0, 1024);
    putenv('MAILSHIM_SCRIPT=' . $script);
})();
