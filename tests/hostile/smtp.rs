//! SMTP, authentication and outbound: hostile input on the MTA side.
