"""JSON Schemas for the Kubernetes objects in infra/kuberay, for offline validation.

No package here ships the KubeRay CRDs or the Kubernetes OpenAPI spec, so these schemas are
transcribed from the sources (fields, JSON names, required-ness):
- KubeRay ``ray.io/v1``: ray-project/kuberay ``ray-operator/apis/ray/v1/raycluster_types.go``
  (RayClusterSpec, HeadGroupSpec, WorkerGroupSpec, AutoscalerOptions) and ``rayjob_types.go``
  (RayJobSpec). ``additionalProperties: false`` at those levels, so a misspelt field fails as
  it would against the CRD's structural schema.
- core/v1 PodTemplateSpec, Container, EnvVar, ResourceRequirements, Service and apps/v1
  Deployment: the subset these manifests use, with Kubernetes' required fields and value
  types (env values are strings, quantities match the resource.Quantity grammar).
"""

from __future__ import annotations

from typing import Any

#: Kubernetes resource.Quantity (e.g. "4", "500m", "16Gi", "1.5").
QUANTITY = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkKMGTPE]|[eE][+-]?[0-9]+)?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

_quantity_map: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {"type": "string", "pattern": QUANTITY},
}

METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63},
        "namespace": {"type": "string", "pattern": DNS_LABEL},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

ENV_VAR: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "value": {"type": "string"},
        "valueFrom": {
            "type": "object",
            "minProperties": 1,
            "properties": {
                "secretKeyRef": {"type": "object", "required": ["name", "key"]},
                "configMapKeyRef": {"type": "object", "required": ["name", "key"]},
                "fieldRef": {"type": "object", "required": ["fieldPath"]},
            },
            "additionalProperties": False,
        },
    },
    "not": {"required": ["value", "valueFrom"]},
}

CONTAINER: dict[str, Any] = {
    "type": "object",
    "required": ["name", "image"],
    "properties": {
        "name": {"type": "string", "pattern": DNS_LABEL},
        "image": {"type": "string", "minLength": 1},
        "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        "command": {"type": "array", "items": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
        "env": {"type": "array", "items": ENV_VAR},
        "ports": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["containerPort"],
                "properties": {
                    "containerPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "name": {"type": "string", "maxLength": 15},
                },
            },
        },
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"requests": _quantity_map, "limits": _quantity_map},
        },
        "volumeMounts": {
            "type": "array",
            "items": {"type": "object", "required": ["name", "mountPath"]},
        },
        "readinessProbe": {"type": "object"},
        "livenessProbe": {"type": "object"},
    },
    "additionalProperties": False,
}

POD_TEMPLATE: dict[str, Any] = {
    "type": "object",
    "required": ["spec"],
    "additionalProperties": False,
    "properties": {
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {"type": "array", "minItems": 1, "items": CONTAINER},
                "serviceAccountName": {"type": "string"},
                "volumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
                "tolerations": {"type": "array", "items": {"type": "object"}},
                "nodeSelector": {"type": "object"},
            },
            "additionalProperties": False,
        },
    },
}

_start_params = {"type": "object", "additionalProperties": {"type": "string"}}

HEAD_GROUP: dict[str, Any] = {
    "type": "object",
    "required": ["rayStartParams", "template"],
    "additionalProperties": False,
    "properties": {
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
        "headService": {"type": "object"},
        "enableIngress": {"type": "boolean"},
        "rayStartParams": _start_params,
        "template": POD_TEMPLATE,
    },
}

WORKER_GROUP: dict[str, Any] = {
    "type": "object",
    "required": ["groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"],
    "additionalProperties": False,
    "properties": {
        "groupName": {"type": "string", "pattern": DNS_LABEL},
        "replicas": {"type": "integer", "minimum": 0},
        "minReplicas": {"type": "integer", "minimum": 0},
        "maxReplicas": {"type": "integer", "minimum": 0},
        "numOfHosts": {"type": "integer", "minimum": 1},
        "rayStartParams": _start_params,
        "template": POD_TEMPLATE,
        "scaleStrategy": {"type": "object"},
    },
}

RAY_CLUSTER_SPEC: dict[str, Any] = {
    "type": "object",
    "required": ["headGroupSpec"],
    "additionalProperties": False,
    "properties": {
        "headGroupSpec": HEAD_GROUP,
        "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP},
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "resources": {"type": "object"},
                "image": {"type": "string"},
                "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                "env": {"type": "array", "items": ENV_VAR},
                "envFrom": {"type": "array"},
                "volumeMounts": {"type": "array"},
                "securityContext": {"type": "object"},
                "idleTimeoutSeconds": {"type": "integer", "minimum": 0},
                "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
            },
        },
        "headServiceAnnotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "suspend": {"type": "boolean"},
    },
}

RAY_JOB_SPEC: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
        "backoffLimit": {"type": "integer", "minimum": 0},
        "rayClusterSpec": RAY_CLUSTER_SPEC,
        "submitterPodTemplate": POD_TEMPLATE,
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "clusterSelector": {"type": "object", "additionalProperties": {"type": "string"}},
        "submitterConfig": {"type": "object"},
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "deletionStrategy": {"type": "object"},
        "entrypoint": {"type": "string"},
        "runtimeEnvYAML": {"type": "string"},
        "jobId": {"type": "string"},
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
        "entrypointResources": {"type": "string"},
        "entrypointNumCpus": {"type": "number"},
        "entrypointNumGpus": {"type": "number"},
        "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
        "shutdownAfterJobFinishes": {"type": "boolean"},
        "suspend": {"type": "boolean"},
        "schedule": {"type": "string"},
    },
}

DEPLOYMENT_SPEC: dict[str, Any] = {
    "type": "object",
    "required": ["selector", "template"],
    "properties": {
        "replicas": {"type": "integer", "minimum": 0},
        "selector": {"type": "object", "required": ["matchLabels"]},
        "template": POD_TEMPLATE,
    },
}

SERVICE_SPEC: dict[str, Any] = {
    "type": "object",
    "required": ["ports"],
    "properties": {
        "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
        "selector": {"type": "object", "additionalProperties": {"type": "string"}},
        "ports": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["port"],
                "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}},
            },
        },
    },
}


def object_schema(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Schema of a whole object: apiVersion/kind fixed, metadata, and ``spec``."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


#: (apiVersion, kind) -> schema, for every kind infra/kuberay may contain.
SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("ray.io/v1", "RayCluster"): object_schema("ray.io/v1", "RayCluster", RAY_CLUSTER_SPEC),
    ("ray.io/v1", "RayJob"): object_schema("ray.io/v1", "RayJob", RAY_JOB_SPEC),
    ("apps/v1", "Deployment"): object_schema("apps/v1", "Deployment", DEPLOYMENT_SPEC),
    ("v1", "Service"): object_schema("v1", "Service", SERVICE_SPEC),
}
