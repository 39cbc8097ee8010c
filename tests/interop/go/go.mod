module qotpinterop

go 1.25

require github.com/qo-proto/qotp v0.2.19
