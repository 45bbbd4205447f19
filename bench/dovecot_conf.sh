# Sourced by the benchmark scripts that compare hermod with Dovecot (pop3d/examples and
# imapd/examples compare_dovecot.sh): `dovecot_conf DIR PROTOCOL PORT [CERT KEY]` prints a
# Dovecot config that keeps everything under DIR (run/, state/, dovecot.log; users in
# DIR/passwd, plain passwords, Maildir in each home) and serves PROTOCOL (pop3 or imap) on
# 127.0.0.1:PORT only: in plain TCP, or with CERT and KEY in implicit TLS (the imaps/pop3s
# listener; the plain one is then off). Dovecot is only the yardstick: nothing here is for
# production.
dovecot_conf() {
    local dir=$1 proto=$2 port=$3 cert=${4:-} key=${5:-} plain_port tls_port ssl
    if [ -n "$cert" ]; then
        plain_port=0 tls_port=$port ssl=required
    else
        plain_port=$port tls_port=0 ssl=no
    fi
    cat <<EOF
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
protocols = $proto
listen = 127.0.0.1
ssl = $ssl
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dir/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%u $dir/passwd
}
service $proto-login {
  inet_listener $proto {
    address = 127.0.0.1
    port = $plain_port
  }
  inet_listener ${proto}s {
    address = 127.0.0.1
    port = $tls_port
  }
}
service anvil {
  chroot =
}
EOF
    if [ -n "$cert" ]; then
        echo "ssl_cert = <$cert"
        echo "ssl_key = <$key"
    fi
}
