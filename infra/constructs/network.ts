/**
 * The VPC, by configuration: none, a new one (private subnets with NAT egress, flow logs to a
 * KMS-encrypted log group, S3 and DynamoDB gateway endpoints, default security group closed), or
 * an existing one given by attributes (no lookup, so synthesis stays offline).
 */
import { RemovalPolicy, Validations } from 'aws-cdk-lib';
import {
  FlowLogDestination,
  FlowLogTrafficType,
  GatewayVpcEndpointAwsService,
  SubnetType,
  Vpc,
  type IVpc,
} from 'aws-cdk-lib/aws-ec2';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import type { AppConfig } from '../config.js';

export interface NetworkProps {
  readonly vpc: AppConfig['vpc'];
  readonly key: IKey;
  readonly logRetention: RetentionDays;
}

export class Network extends Construct {
  /** Undefined in `none` mode. */
  readonly vpc?: IVpc;

  constructor(scope: Construct, id: string, props: NetworkProps) {
    super(scope, id);
    const cfg = props.vpc;
    switch (cfg.mode) {
      case 'none':
        break;
      case 'import':
        this.vpc = Vpc.fromVpcAttributes(this, 'Vpc', {
          vpcId: cfg.vpcId,
          availabilityZones: cfg.availabilityZones,
          privateSubnetIds: cfg.privateSubnetIds,
        });
        break;
      case 'create': {
        const flowLogs = new LogGroup(this, 'FlowLogs', {
          encryptionKey: props.key,
          retention: props.logRetention,
          removalPolicy: RemovalPolicy.RETAIN,
        });
        const vpc = new Vpc(this, 'Vpc', {
          maxAzs: cfg.maxAzs,
          natGateways: cfg.natGateways,
          restrictDefaultSecurityGroup: true,
          subnetConfiguration: [
            { name: 'egress', subnetType: SubnetType.PUBLIC, cidrMask: 26, mapPublicIpOnLaunch: false },
            { name: 'private', subnetType: SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 20 },
          ],
          flowLogs: {
            all: {
              destination: FlowLogDestination.toCloudWatchLogs(flowLogs),
              trafficType: FlowLogTrafficType.ALL,
            },
          },
          gatewayEndpoints: {
            s3: { service: GatewayVpcEndpointAwsService.S3 },
            dynamodb: { service: GatewayVpcEndpointAwsService.DYNAMODB },
          },
        });
        for (const subnet of vpc.publicSubnets) {
          Validations.of(subnet).acknowledge({
            id: 'HIPAA.Security-VPCNoUnrestrictedRouteToIGW',
            reason:
              'Public subnets hold only the NAT gateways (no workloads, no public IPs on launch); the functions and endpoints sit in private subnets whose default route is the NAT gateway.',
          });
        }
        Validations.of(vpc).acknowledge({
          id: 'HIPAA.Security-IAMNoInlinePolicy',
          reason: 'The flow-log delivery role created by CDK, allowed to write to the flow-log group only.',
        });
        this.vpc = vpc;
        break;
      }
    }
  }
}
