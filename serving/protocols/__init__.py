"""The protocols a client speaks to the proxy, read into rows and written back as answers.

MLflow's scoring protocol (``scoring``: JSON, CSV and, through ``parquet_body`` and
``parquet_pages``, Parquet), the Open Inference Protocol over REST (``open_inference``,
``open_inference_routes``) and gRPC (``grpc``), all over one row reader (``rows``). Nothing
here knows which model server answers.
"""
