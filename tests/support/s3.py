"""A real S3-compatible server on loopback for tests: moto in server mode.

``S3Server`` starts moto's threaded server on 127.0.0.1 (a free port), creates buckets, and gives
the environment a client needs (endpoint, dummy credentials); every request it serves is logged so
tests can assert what was (not) fetched."""

from __future__ import annotations


class S3Server:
    def __init__(self, buckets: tuple[str, ...] = ("grist",)):
        self.buckets = buckets
        self._server = None
        self.endpoint = ""

    def __enter__(self) -> "S3Server":
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
        for bucket in self.buckets:
            client.create_bucket(Bucket=bucket)
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.stop()

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": self.endpoint, "region_name": "us-east-1"}, skip_instance_cache=True, use_listings_cache=False)

    def apply_env(self, monkeypatch) -> None:
        for k, v in self.env.items():
            monkeypatch.setenv(k, v)
        # s3fs caches filesystem instances per argument set; a new server needs a new instance.
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
